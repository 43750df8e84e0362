"""`make demo` (scripts/demo.py): synthetic VOC-layout data (synthetic), resumable
steps (steps), `caffe train` with resume (training), log parsing (traininglog),
OpenCV plots (plot), the summary page (summary) and the pipeline tying them
together (pipeline)."""
