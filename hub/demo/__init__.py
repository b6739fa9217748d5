"""`kotahub demo`: a simulated Semarang (fleet, simulators, runner, summary)."""
