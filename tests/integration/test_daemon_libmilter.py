#!/usr/bin/python3
"""test_daemon_libmilter - test_daemon.py, every case, against the
libmilter transport (milter_transport = libmilter; test_daemon.py itself
runs the default, native): start, stop, signals, sockets and sessions open
at shutdown must behave the same whichever transport serves.

TAP on stdout, as test_daemon.py's.
"""
import os
import runpy
import sys

sys.dont_write_bytecode = True
os.environ["VEMILTER_TEST_TRANSPORT"] = "libmilter"  # read by vmtest.base_conf
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_daemon.py"),
               run_name="__main__")
