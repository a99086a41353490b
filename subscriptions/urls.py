"""URLs of the subscription pages (the list, one subscription, Try it, the endpoint sync) and the
jobs pages (submit from a subscription, the list, one job, its live part, download, cancel)."""

from django.urls import path

from subscriptions import job_pages, pages

urlpatterns = [
    path("subscriptions/", pages.subscription_list, name="subscription-list"),
    path(
        "subscriptions/<int:subscription_id>/",
        pages.subscription_detail,
        name="subscription-detail",
    ),
    path(
        "subscriptions/<int:subscription_id>/try/",
        pages.subscription_try,
        name="subscription-try",
    ),
    path(
        "subscriptions/<int:subscription_id>/sync-endpoint/",
        pages.subscription_sync_endpoint,
        name="subscription-sync-endpoint",
    ),
    path(
        "subscriptions/<int:subscription_id>/jobs/",
        job_pages.subscription_job_submit,
        name="subscription-job-submit",
    ),
    path("jobs/", job_pages.job_list, name="job-list"),
    # <str:>, not <uuid:>: a malformed id gets the same "not found" page as another LOB's job.
    path("jobs/<str:job_id>/", job_pages.job_detail, name="job-detail"),
    path("jobs/<str:job_id>/live/", job_pages.job_live, name="job-live"),
    path("jobs/<str:job_id>/download/", job_pages.job_download, name="job-download"),
    path("jobs/<str:job_id>/cancel/", job_pages.job_cancel, name="job-cancel"),
    path("jobs/<str:job_id>/run-again/", job_pages.job_run_again, name="job-run-again"),
]
