"""Networks: the conditional StyleGAN2 (:mod:`.stylegan2`), the classifiers (:mod:`.classifier`) and the
adapter between them (:mod:`.adapter`)."""
