"""Training: a run's options (:mod:`.config`, ``TrainConfig``), data pipeline (:mod:`.data`), the loop
(:mod:`.loop`, ``train``), checkpoints and the run log (:mod:`.checkpoint`), data-parallel
processes (:mod:`.dist`).  Models come from the package's factory
(:func:`fastreshuffle.inference.loading.build_model`)."""
