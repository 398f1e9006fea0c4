"""hf_ssl test suite."""
