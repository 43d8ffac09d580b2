"""Research scripts above the library (policy tables, the oracle and its search, the warm-up rule, the what-ifs,
failure sites, live-state comparison); run as `.venv/bin/python experiments/NAME.py`, those that measure a docs
figure write it with --results-page.
"""
