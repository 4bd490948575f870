"""nerfstudio method ``nerfacto-hollow`` (entry-point group ``nerfstudio.method_configs``).

- ``methods``  the entry-point target (a ``MethodSpecification``); never raises at import;
- ``config``   the model config (a ``NerfactoModelConfig`` subclass) and the trainer config;
- ``model``    the model (a ``NerfactoModel`` subclass), imported only when a model is built.
"""
