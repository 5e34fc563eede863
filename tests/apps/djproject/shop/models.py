from django.db import models


class Record(models.Model):
    """One row per task run: what ran (label), in which process, with which value."""

    label = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    pid = models.IntegerField(default=0)
