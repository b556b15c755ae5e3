-- wrk script: POST the image in $BENCH_IMAGE as multipart/form-data field "file".
local path = os.getenv("BENCH_IMAGE")
local handle = assert(io.open(path, "rb"))
local image = handle:read("*all")
handle:close()
local boundary = "----wrk-bench-boundary"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="file"; filename="test_img0.png"\r\n'
  .. "Content-Type: image/png\r\n\r\n"
  .. image .. "\r\n--" .. boundary .. "--\r\n"
