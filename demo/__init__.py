"""Demo material the project makes itself: synthesised guitar, a small overdrive pedal, models of it.

* ``demo.guitar``: plucked-string guitar phrases (extended Karplus-Strong);
* ``demo.device``: the pedal, whose output is the demo's reference recording;
* ``demo.train``: trains the committed CoreAudioML checkpoints in ``demo/checkpoints/``;
* ``demo.material``: writes the demo excerpts and lists the checkpoints for ``load_demo``.
"""
