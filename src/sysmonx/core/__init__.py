"""What every other package builds on and which depends on nothing else of SysmonX: the error
root (:mod:`.errors`), the RE2 policy (:mod:`.regex`) and the plugin registries
(:mod:`.registry`)."""
