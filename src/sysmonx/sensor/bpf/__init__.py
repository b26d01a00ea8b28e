"""The tier-A BPF object: its C source (``sensor.bpf.c``), the build with cache (:mod:`.build`)
and the ctypes binding to the system libbpf (:mod:`.libbpf`). See shared/spec/linux-sensing.md
§2.4(b) and §5; the backend that uses them is :mod:`sysmonx.sensor.backends.ebpf`."""
