# The plotting service's entry point: plumber on $HOST:$PORT (default 0.0.0.0:8080, as Cloud Run wants).
# `Rscript plotter/main.R`, from anywhere: plumber.R is found beside this file.

log_json <- function(severity, message, ...) {
  fields <- list(severity = severity, message = message, ...)
  cat(jsonlite::toJSON(fields, auto_unbox = TRUE), "\n", sep = "")
}

# plumber's own check of plumber.maxRequestSize (Plumber$onHeaders, run by httpuv on the headers, before the
# body is read) answers 413 in plain text; this one answers in the JSON every other refusal uses, and says
# what to do. The limit is plumber.R's (options(plumber.maxRequestSize)), read when a request comes.
PlotterPlumber <- R6::R6Class("PlotterPlumber", inherit = plumber::Plumber, public = list(
  onHeaders = function(req) {
    limit <- getOption("plumber.maxRequestSize", 0)
    refuse <- function(status, code, detail) {
      log_json("WARNING", "refused a request from its headers", status = status, code = code)
      body <- jsonlite::toJSON(list(detail = detail, code = code), auto_unbox = TRUE)
      list(status = status, headers = list("Content-Type" = "application/json"), body = as.character(body))
    }
    if (length(req$HTTP_TRANSFER_ENCODING) > 0) {
      return(refuse(411L, "length_required", "Send the body with a Content-Length header, not chunked."))
    }
    size <- if (length(req$CONTENT_LENGTH) > 0) suppressWarnings(as.numeric(req$CONTENT_LENGTH)) else 0
    if (is.na(size) || size > limit) {
      return(refuse(413L, "too_large", sprintf(
        "The body is over %d bytes. Send one /predict answer for at most 16 images and 10 classes each.", limit
      )))
    }
    NULL
  }
))

args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)][1])))
port <- suppressWarnings(as.integer(Sys.getenv("PORT", "8080")))
if (is.na(port) || port < 1L || port > 65535L) {
  log_json("ERROR", "PORT must be a port number from 1 to 65535", port = Sys.getenv("PORT"))
  quit(status = 2L)
}
host <- Sys.getenv("HOST", "0.0.0.0")
router <- PlotterPlumber$new(file.path(here, "plumber.R"))
log_json("INFO", "the plotter listens", host = host, port = port)
plumber::pr_run(router, host = host, port = port, quiet = TRUE)
