"""What every benchmark shares: child processes, timing, RSS, a broker, rendering, the machine.

Only the standard library and numpy are imported at the top of these modules, so children
can run them in the tflite-runtime venv (numpy < 2) and in the QEMU arm64 chroot.

- ``paths``: where the checkout, the demo model and the tflite-runtime venv are.
- ``children``: run a benchmark in a child process, a JSON spec in and a JSON result out.
- ``timing``: time calls in rounds (stages taking turns) or by a time budget.
- ``proc``: RSS, peak RSS, CPU seconds of a process; the load average; waiting.
- ``broker``: the system's Mosquitto on a free port; a collecting subscriber.
- ``machine``: what the results file says about the host.
- ``markdown``: tables and the number formats of the results files.
"""
