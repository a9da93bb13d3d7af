#!/usr/bin/python3
"""test_postfix_native - test_postfix.py (a real Postfix in front), every case, against the native
milter transport (milter_transport = native): both transports must give the
same answers behind a real Postfix.

TAP on stdout, as test_milter.py's.
"""
import os
import runpy
import sys

sys.dont_write_bytecode = True
os.environ["VEMILTER_TEST_TRANSPORT"] = "native"  # read by vmtest.base_conf
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_postfix.py"),
               run_name="__main__")
