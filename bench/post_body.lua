-- wrk script: POST the file in $BENCH_BODY with the Content-Type in $BENCH_CONTENT_TYPE.
local handle = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = handle:read("*all")
handle:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
