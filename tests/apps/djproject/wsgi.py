import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")
application = get_wsgi_application()

if os.environ.get("WEB_PRELOAD") == "1":
    # Under preload_app this runs in gunicorn's arbiter, which then forks the pool and
    # the web workers: an open connection here is what must not cross those forks.
    from djproject.shop.models import Record

    Record.objects.exists()
