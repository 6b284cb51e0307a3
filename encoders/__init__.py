"""Text encoders: a transformer item/user tower, PEFT fine-tuning methods and serving exports.

Modules, each with one job (imported explicitly; nothing heavy is imported here so that
`import encoders` stays cheap for the CLI and the HTTP service):

- `encoders.base_model`   resolve a base model name or folder without ever downloading by accident
- `encoders.text_encoder` `TextEncoder`: HF transformer + tokenizer, mean pooling, L2-normalised vectors
- `encoders.encoding`     the one batched encoding loop (length-sorted, background tokenisation, bf16 on CUDA)
- `encoders.peft_methods` LoRA / AdaLoRA / IA3 / full / frozen; small adapter files; merging for serving
- `encoders.export`       int8 dynamic quantisation, agreement checks, plain HF folders for serving
- `encoders.testing`      a tiny random BERT written to disk, for fast tests
"""
