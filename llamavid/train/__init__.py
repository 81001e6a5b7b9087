"""Training LLaMA-VID: the published three-stage recipe on accelerate (DeepSpeed ZeRO-2 optional).

stage 1 (alignment)     trains the projectors: mm_projector, vlm_att_{projector,key,val}
stage 2 (instruction)   also the LLM and the QFormer
stage 3 (long video)    the LLM and projectors, QFormer frozen (bert_type "qformer_pretrain_freeze")

The vision encoder is always frozen, so its features are computed once per video into .vidtok files
before training starts, and the training loop never runs it.
"""
