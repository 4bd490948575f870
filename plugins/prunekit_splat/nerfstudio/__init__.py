"""nerfstudio methods that prune Gaussians while splatfacto trains: ``splatfacto-sundae``,
``splatfacto-radsplat``, ``splatfacto-lightgaussian`` (entry-point group
``nerfstudio.method_configs``; see README.md beside this file).

- ``methods``  the entry-point targets (``MethodSpecification`` objects); never raises at import;
- ``config``   the model config (a ``SplatfactoModelConfig`` subclass) and the trainer configs;
- ``model``    the model (a ``SplatfactoModel`` subclass), imported only when a model is built.
"""
