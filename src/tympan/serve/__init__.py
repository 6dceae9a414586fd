"""HTTP serving of a model file: FastAPI app, web page, upload decoding, micro-batching.

Needs the ``serve`` extra (``pip install 'tympan[serve]'``). Start it with
``tympan serve MODEL`` or build the app with :func:`tympan.serve.app.create_app`.
"""
