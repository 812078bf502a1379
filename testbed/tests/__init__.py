"""Host tests of the test bed's pure logic; tests/kernel/test_testbed.py checks a booted VM."""
