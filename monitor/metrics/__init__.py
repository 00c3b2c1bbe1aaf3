"""What a monitoring stack reads: Prometheus metrics, health and readiness, served by the supervisor.

gather.py     the snapshot, from the store and the supervisor (I/O, in the supervisor's loop)
collector.py  the snapshot as metric families (pure)
server.py     the HTTP thread: /metrics, /healthz, /readyz; the address setting
"""
