"""The dashboard's pages: overview, jobs, one job, workers, periodic tasks.

Each page is a template around a fragment (``templates/_*.html``); the same URL with
``?fragment=1`` returns the fragment alone, which the page's script fetches again every
few seconds, so a job changing state shows without a reload.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import ops, queue_controls
from . import data
from .chart import throughput_svg
from .site import Site


def _page(site: Site, request: Request, name: str, **context: Any) -> Response:
    if request.query_params.get("fragment"):
        return site.render(request, f"_{name}.html", **context)
    return site.render(request, f"{name}.html", **context)


def routes(site: Site) -> list[Route]:
    """The pages' routes, bound to ``site``."""

    def overview(request: Request) -> Response:
        with site.connections.connection() as conn:
            started = time.perf_counter()
            stats = ops.queue_stats(conn)  # exact counts: one read of every live job
            counting = time.perf_counter() - started
            paused = queue_controls.paused_queues(conn)
            minutes = data.throughput(conn)
            unserved = ops.unserved_tasks(conn)
        return _page(
            site,
            request,
            "overview",
            queues=data.queue_rows(stats, paused),
            chart=throughput_svg(minutes),
            finished_last_hour=(sum(m.succeeded for m in minutes), sum(m.failed for m in minutes)),
            unserved=unserved,
            # A backlog that takes long to count is counted less often: the refreshes of
            # one open overview spend at most about 5% of the time counting.
            interval_ms=int(max(site.refresh, 20 * counting) * 1000),
        )

    def jobs(request: Request) -> Response:
        query = request.query_params
        selection = data.JobFilter.parse(query, query.getlist("state"))
        after = data.Cursor.decode(query["after"]) if query.get("after") else None
        trail = data.parse_trail(query.get("back"))
        with site.connections.connection() as conn:
            page = data.list_jobs(conn, selection, after=after, sensitive=site.sensitive_for())
        return _page(
            site,
            request,
            "jobs",
            page=page,
            selection=selection,
            all_states=data.ALL_STATES,
            after=query.get("after"),
            links=data.page_links(trail, after, page.next),
            now=dt.datetime.now(dt.timezone.utc),
        )

    def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        with site.connections.connection() as conn:
            found = data.job_detail(conn, job_id, site.sensitive_for())
            flows = data.workflows(conn, job_id) if found else []
        if found is None:
            return site.render(
                request,
                "error.html",
                status_code=404,
                message=f"no job {job_id}: never enqueued, purged, or its result expired "
                "(result_expires)",
            )
        return _page(site, request, "job", job=found, workflows=flows)

    def workers(request: Request) -> Response:
        with site.connections.connection() as conn:
            found = ops.worker_status(conn)
        return _page(site, request, "workers", workers=found)

    def periodic(request: Request) -> Response:
        with site.connections.connection() as conn:
            entries = data.periodic_tasks(conn)
        return _page(site, request, "periodic", entries=entries)

    return [
        Route("/", overview, name="overview"),
        Route("/jobs", jobs, name="jobs"),
        Route("/jobs/{job_id}", job, name="job"),
        Route("/workers", workers, name="workers"),
        Route("/periodic", periodic, name="periodic"),
    ]
