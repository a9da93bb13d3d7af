#!/usr/bin/python3
"""test_milter_native - test_milter.py, every case, against the native
milter transport (milter_transport = native): both transports must give the
same answers, replies, log lines and stop behaviour.

TAP on stdout, as test_milter.py's.
"""
import os
import runpy
import sys

sys.dont_write_bytecode = True
os.environ["VEMILTER_TEST_TRANSPORT"] = "native"  # read by vmtest.base_conf
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_milter.py"),
               run_name="__main__")
