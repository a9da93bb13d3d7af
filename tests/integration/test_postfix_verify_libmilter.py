#!/usr/bin/python3
"""test_postfix_verify_libmilter - test_postfix_verify.py (real Postfix,
probes), every case, against the libmilter transport (milter_transport =
libmilter; test_postfix_verify.py itself runs the default, native): both
transports must give the same verdicts behind a real Postfix, probes run
off libmilter's session threads.

TAP on stdout, as test_milter.py's.
"""
import os
import runpy
import sys

sys.dont_write_bytecode = True
os.environ["VEMILTER_TEST_TRANSPORT"] = "libmilter"  # read by vmtest.base_conf
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_postfix_verify.py"),
               run_name="__main__")
