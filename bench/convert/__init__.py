"""The converter benchmark (``bench/convert_bench.py``): one module per part of the question.

``grid`` (the models, data and error measure), ``prep`` (training and ONNX export),
``conversions`` (every variant, bundled), ``runtimes`` (timing and memory children),
``findings``, ``overview`` and ``report`` (``bench/RESULTS-convert.md``), ``cli`` (options
and the three phases).
"""
