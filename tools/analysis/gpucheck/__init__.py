"""The pieces of ``tools/analysis/gpu_check.py``, one per concern, each readable alone.

* :mod:`.wheels`: what travels to the offline machine and how it is installed there (stand-ins included);
* :mod:`.build`: the nvcc probe and mmcv's CUDA build in the background;
* :mod:`.parity`, :mod:`.training`, :mod:`.bench`, :mod:`.ops`: the checks;
* :mod:`.report`: verdicts, ``report.json`` and ``report.md``;
* :mod:`.plan`: the stages with their estimates, and the orchestrator that runs them within the budget.
"""
