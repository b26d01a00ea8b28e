"""The live Linux sensor: trace backends -> observations -> Sysmon for Linux events.

See docs/ARCHITECTURE.md and shared/spec/linux-sensing.md.
"""
