#!/usr/bin/python3
"""test_fdguard_libmilter - test_fdguard.py, every case, against the
libmilter transport (milter_transport = libmilter; test_fdguard.py itself
runs the default, native): milter_timeout and running out of descriptors
must be handled the same way whichever transport accepts the sessions.

TAP on stdout, as test_fdguard.py's.
"""
import os
import runpy
import sys

sys.dont_write_bytecode = True
os.environ["VEMILTER_TEST_TRANSPORT"] = "libmilter"  # read by vmtest.base_conf
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_fdguard.py"),
               run_name="__main__")
