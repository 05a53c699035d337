"""Running trained models: the model factory (:mod:`.loading`), ``restore`` (:mod:`.restore`),
tiled inference and the self-ensemble (:mod:`.tiling`), and codec + model evaluation
(:mod:`.evaluate`).  Submodules are imported where used."""
