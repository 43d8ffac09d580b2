"""Research scripts above the library (oracle, what-ifs, failure sites, live-state comparison); run as
`.venv/bin/python experiments/NAME.py`. They may import every package; nothing imports them but tests."""
