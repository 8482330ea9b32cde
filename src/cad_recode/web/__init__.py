"""The local web app (apps layer): ``cad-recode serve --model DIR``.

- :mod:`cad_recode.web.settings`: limits and defaults (host, port, workers, upload size, points);
- :mod:`cad_recode.web.service`: the one adapter into the inference recipe and the sandbox;
- :mod:`cad_recode.web.views`: GLB views, metrics and the candidates table;
- :mod:`cad_recode.web.app`: the Gradio page and :func:`~cad_recode.web.app.launch`.

Nothing imports this package; ``gradio`` is imported only by ``app``.
"""
