#!/usr/bin/python3
"""test_milter_libmilter - test_milter.py, every case, against the libmilter
transport (milter_transport = libmilter; test_milter.py itself runs the
default, native): both transports must give the same answers, replies, log
lines and stop behaviour.

TAP on stdout, as test_milter.py's.
"""
import os
import runpy
import sys

sys.dont_write_bytecode = True
os.environ["VEMILTER_TEST_TRANSPORT"] = "libmilter"  # read by vmtest.base_conf
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_milter.py"),
               run_name="__main__")
