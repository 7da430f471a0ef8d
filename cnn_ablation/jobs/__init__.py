"""Jobs: queueing a run (`launch`), the long-lived worker that claims runs and watches its training
processes (`worker`), GPU slots (`slots`), liveness of other workers' runs (`liveness`), and the Ray
executor (`ray_executor`).

May import: networks and data (to validate a run before it is queued), storage. Never training:
a run trains in a child process (`python -m cnn_ablation execute RUN`), never in this one.
"""
