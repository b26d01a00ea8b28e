"""Windows glue: Sysmon as the sensor, Event Log subscriptions, PowerShell script blocks, ETW.

Every module here imports on any OS. Win32 DLLs are looked up only when a live object is built on
Windows (:func:`sysmonx.windows.win32.load_dll`), and every piece that talks to the OS takes an
injectable API object, so the logic runs and is tested on Linux against fakes
(:mod:`sysmonx.windows.fakes`) that replay recorded event XML.

Modules:

=====================  ==========================================================================
``win32``              fixed-width Win32 types, GUID/FILETIME helpers, :class:`Win32Error`, lazy
                       DLL loading
``wevtapi``            wevtapi.dll declarations (EvtSubscribe, EvtNext, EvtRender, bookmarks, ...)
                       and :class:`~sysmonx.windows.wevtapi.CtypesWevtApi`
``etw``                ETW consumer declarations (EVENT_TRACE_LOGFILEW, EVENT_RECORD, ...) and
                       :class:`~sysmonx.windows.etw.CtypesEtwApi`
``eventlog``           the Event Log subscription source: pull thread, bookmarks committed after
                       the consumer accepted events, dedup, re-subscribe on stale results, loss
``report``             loss and errors as data: :class:`~sysmonx.windows.report.Loss`, event 255
``powershell``         4104 script-block reassembly, 4103 context parsing
``etw_process``        Microsoft-Windows-Kernel-Process real-time consumer with loss counters
``sensorconfig``       the Sysmon sensor configuration derived from the user's configuration
``sysmon``             locate / install / reconfigure / uninstall Sysmon through a command runner
``capabilities``       which backends this OS can use, and why not
``wheels``             win_amd64 installability check of the runtime dependencies
``fakes``              fake wevtapi and ETW APIs replaying recorded events (tests, and the
                       wiring phase's tests)
=====================  ==========================================================================
"""
