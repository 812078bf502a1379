"""Host tests of the test bed's pure logic (the VM runs themselves are tests/kernel/test_testbed.py)."""
