"""Offline AWQ quantization into AutoAWQ "gemm" checkpoints (one module per algorithm step).

calib (calibration tokens) -> pre_quant (block by block: auto_scale, auto_clip, quantizer)
-> writer (the checkpoint) -> evaluate (perplexity on the dequantized weights); cli ties them.
Nothing here is needed at inference time.
"""
