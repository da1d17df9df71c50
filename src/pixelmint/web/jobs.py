"""placeholder"""

from pixelmint.web.routing import web_router

router = web_router(prefix="/app/jobs")
