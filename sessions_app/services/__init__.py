"""Write-side business logic of emotion sessions (HackSoftware Django Styleguide "services").

Modules, each a job: ``sessions`` (create, end, counters), ``frames`` (validate, queue, store results, exactly-once
outcomes), ``analysis`` (the worker's decode + recognise + record), ``uploads`` (photos and videos into frames),
``events`` (result events to live pages), ``retention`` (purge of old results), ``exports`` (the export audit
log). Services may import models, selectors and ``inference``; they never import edges (views, consumers, tasks,
serializers). Frames are queued by task name, so no service imports ``sessions_app.tasks``.
"""
