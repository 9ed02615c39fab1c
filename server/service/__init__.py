"""The gRPC service: a Stylize request is checked (admission.py) and read (upload.py),
prepared once into a Job (jobs.py), queued (scheduler.py) and run by a worker, a
local device (workers.py) or a cluster slot (../cluster/); server.py serves it."""
