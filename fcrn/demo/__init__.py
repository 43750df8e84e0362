"""`make demo` (scripts/demo.py): synthetic VOC-layout data (synthetic),
resumable steps (steps), the summary page (summary) and the pipeline of
library calls tying them together (pipeline)."""
