"""Small pipeline stages that are neither the Sysmon filter (:mod:`sysmonx.filtering.stage`) nor
Sigma detection (:mod:`sysmonx.detection.stages`): the time window, the non-Sysmon gate and record
numbering. One module per stage, each registered in :data:`sysmonx.core.registry.STAGES`."""
