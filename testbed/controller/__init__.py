"""The run's SDN controller: os-ken apps in their own process (forwarding, port statistics).

`main.py` starts os-ken in-process in a child process (so its hub and any monkey-patching never
reach the network builder); `forwarding.py` and `portstats.py` are one small app per concern.
"""
