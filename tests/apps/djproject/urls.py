"""Two views: one enqueues a task (as a web request would), one reads its result."""

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path

from djproject.shop.tasks import add


def pid(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def enqueue(request: HttpRequest) -> JsonResponse:
    result = add.enqueue(int(request.GET["x"]), int(request.GET["y"]))
    return JsonResponse({"id": result.id, "pid": os.getpid()})


def result(request: HttpRequest, result_id: str) -> JsonResponse:
    r = add.get_result(result_id)
    value = r.return_value if r.status == "SUCCESSFUL" else None
    return JsonResponse({"status": r.status, "value": value})


urlpatterns = [
    path("pid", pid),
    path("enqueue", enqueue),
    path("result/<str:result_id>", result),
]
