"""Files in and out: images (:mod:`.images`, decoded once with alpha, mode and ICC), codecs
(:mod:`.codecs`), model weights as safetensors (:mod:`.weights`), atomic no-clobber writes
(:mod:`.safe_write`, the one place files are published) and where data sets live
(:mod:`.datasets`).  Submodules are imported where used."""
