# FER platform image: web (daphne) and worker (celery) run from the same image; the ONNX model is baked in.
# Build: docker compose build   (or: docker build -t fer-platform .)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DJANGO_SETTINGS_MODULE=fer_platform.settings
WORKDIR /app

# WeasyPrint (PDF reports) needs Pango (with HarfBuzz, fontconfig, FreeType) and at least one font at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# Serving dependencies only, from the hashed serving lock: training (TensorFlow/Keras/tf2onnx, requirements/train.txt)
# and test tools (requirements/dev.txt) stay out of the image.
COPY requirements/serve.txt /tmp/serve.txt
RUN pip install --no-deps --require-hashes -r /tmp/serve.txt && pip check && rm /tmp/serve.txt

COPY . /app

# Bake the model in: fail the build when the shipped model (or FER_MODEL_PATH) cannot be loaded, or when WeasyPrint
# cannot render a PDF (missing system libraries or fonts).
RUN python -c "from inference import EmotionRecognizer; EmotionRecognizer.default(); print('model OK')" \
    && python -c "import weasyprint; assert weasyprint.HTML(string='<p>PDF</p>').write_pdf()[:5] == b'%PDF-'; print('PDF OK')" \
    && DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 10001 --home /app fer && chown -R fer /app/staticfiles

USER fer
EXPOSE 8000
# The web command; the worker service overrides it (docker-compose.yml).
CMD ["sh", "-c", "python manage.py migrate --noinput && exec daphne -b 0.0.0.0 -p 8000 fer_platform.asgi:application"]
