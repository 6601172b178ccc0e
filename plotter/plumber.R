# The plotting service: POST /plot takes the backend's /predict answer (JSON) and returns a PNG ggplot2
# chart of it; GET /health. Run with `Rscript plotter/main.R` (HOST, PORT), or
# `Rscript -e 'plumber::pr_run(plumber::pr("plotter/plumber.R"), port=8090)'`.
#
# Everything that arrives is hostile: the body is capped before it is read (plumber's maxRequestSize, checked
# on the headers), its JSON parsed inside tryCatch, its shape checked, its numbers bounded, and every label
# drawn as plain text (a character vector: no parse = TRUE, no label_parsed, no plotmath anywhere), so
# "alpha^2" is drawn as those seven characters and "system('...')" is never evaluated. Errors a caller can
# cause are 4xx JSON {"detail": ..., "code": ...} saying what to do, as the backend's are. Logs are JSON
# lines on stdout with "severity" and "message" (Cloud Logging reads them so).

suppressPackageStartupMessages({
  library(ggplot2)
})

MAX_BODY_BYTES <- 1024 * 1024 # a /predict answer for 16 images at top_k = 1000 is about 1 MB
MAX_RESULTS <- 16L # images per chart (the backend's MAX_FILES default)
MAX_CLASSES <- 10L # classes drawn per image (the most probable; the frontend asks for at most 10)
MAX_LABEL_CHARS <- 48L # longer labels and file names are cut, with an ellipsis
SIZE_RANGE <- c(200L, 2000L) # width and height, in pixels
DEFAULT_SIZE <- c(800L, 400L)
CHARTS <- c("auto", "bars", "compare")
DPI <- 96

# plumber itself refuses a body over this from its Content-Length, before reading it (and any chunked
# body, whose length is unknown): httpuv would otherwise buffer a body of any size. See the @plumber block.
options(plumber.maxRequestSize = MAX_BODY_BYTES)

# /plot reads req$bodyRaw itself (jsonlite, inside tryCatch, for a 400 that says what to do), so plumber must
# not parse the body: a parser that takes any content type and leaves it alone. plumber's own "none" parser
# is registered for the content-type regex "*", which is no valid ICU regex (plumber 1.2.1: every request
# fails with U_REGEX_RULE_SYNTAX).
# A request without a Content-Type would still be given to a "json" or "form" parser by name (and, there
# being none, log a line that is not JSON): the filter below names a type for it.
plumber::register_parser("unparsed", function(...) function(value, ...) NULL, regex = ".", verbose = FALSE)

# --- logs

log_line <- function(severity, message, ...) {
  fields <- list(severity = severity, message = message, ...)
  cat(jsonlite::toJSON(fields, auto_unbox = TRUE, null = "null", digits = NA), "\n", sep = "", file = stdout())
  flush(stdout())
}

# --- answers

json_error <- function(res, status, code, detail) {
  res$status <- status
  res$setHeader("Content-Type", "application/json")
  res$body <- as.character(jsonlite::toJSON(list(detail = detail, code = code), auto_unbox = TRUE))
  res
}

# A caller's mistake: carries the status and code of the answer.
refuse <- function(status, code, detail) {
  stop(structure(class = c("plot_refusal", "error", "condition"),
                 list(message = detail, call = NULL, status = status, code = code)))
}

# --- reading the request

whole_number <- function(value, name, default, range) {
  if (is.null(value) || identical(value, "")) {
    return(default)
  }
  text <- as.character(value)[1]
  if (!grepl("^[0-9]{1,5}$", text)) {
    refuse(400L, "bad_size", sprintf("%s must be a whole number of pixels from %d to %d.", name, range[1], range[2]))
  }
  number <- as.integer(text)
  if (number < range[1] || number > range[2]) {
    refuse(400L, "bad_size", sprintf("%s must be from %d to %d pixels; %d is not.", name, range[1], range[2], number))
  }
  number
}

# Plain text of at most MAX_LABEL_CHARS characters: control characters (newlines included) become spaces,
# invalid UTF-8 is replaced. Only ever used as a character string.
as_label <- function(value, fallback) {
  if (!is.character(value) || length(value) != 1 || is.na(value)) {
    return(fallback)
  }
  text <- iconv(enc2utf8(value), "UTF-8", "UTF-8", sub = "?")
  text <- gsub("[[:cntrl:]]", " ", text)
  text <- trimws(text)
  if (!nzchar(text)) {
    return(fallback)
  }
  if (nchar(text, type = "chars") > MAX_LABEL_CHARS) {
    text <- paste0(substr(text, 1, MAX_LABEL_CHARS - 1), "\u2026")
  }
  text
}

shape_error <- function(where) {
  refuse(400L, "bad_shape", paste0(
    "The body must be the backend's /predict answer: {\"model\": ..., \"results\": [{\"filename\": ..., ",
    "\"predictions\": [{\"label\": ..., \"probability\": 0..1}, ...]}, ...]}. ", where
  ))
}

# The results of a /predict answer as a data frame: image (1..n), name, rank, label, probability.
read_predictions <- function(body) {
  if (!is.list(body) || is.null(names(body)) || !is.list(body$results)) {
    shape_error("It has no \"results\" list.")
  }
  results <- body$results
  if (length(results) == 0) {
    shape_error("\"results\" is empty: there is nothing to draw.")
  }
  if (length(results) > MAX_RESULTS) {
    refuse(413L, "too_many_results", sprintf(
      "At most %d images fit one chart; this answer has %d. Send fewer results.", MAX_RESULTS, length(results)
    ))
  }
  rows <- vector("list", length(results))
  for (i in seq_along(results)) {
    result <- results[[i]]
    if (!is.list(result) || !is.list(result$predictions) || length(result$predictions) == 0) {
      shape_error(sprintf("Result %d has no \"predictions\" list.", i))
    }
    predictions <- result$predictions
    probability <- vapply(predictions, function(p) {
      value <- if (is.list(p)) p$probability else NULL
      if (!is.numeric(value) || length(value) != 1 || !is.finite(value) || value < 0 || value > 1) NA_real_
      else as.numeric(value)
    }, numeric(1))
    if (anyNA(probability)) {
      shape_error(sprintf("Result %d has a prediction whose \"probability\" is not a number from 0 to 1.", i))
    }
    labels <- vapply(seq_along(predictions), function(j) {
      p <- predictions[[j]]
      as_label(if (is.list(p)) p$label else NULL, sprintf("class %d", j))
    }, character(1))
    keep <- head(order(-probability), MAX_CLASSES)
    rows[[i]] <- data.frame(
      image = i,
      name = sprintf("%d. %s", i, as_label(result$filename, "image")),
      rank = seq_along(keep),
      label = labels[keep],
      probability = probability[keep],
      stringsAsFactors = FALSE
    )
  }
  do.call(rbind, rows)
}

# --- the charts (labels only ever as plain strings: scales map keys to them, no parsing)

percent <- function(p) sprintf("%.1f%%", 100 * p)

bars_chart <- function(data, model) {
  # One bar per (image, rank): the key keeps duplicate labels apart; the axis shows the label text.
  data$key <- sprintf("%02d-%02d", data$image, data$rank)
  axis_labels <- stats::setNames(data$label, data$key)
  ordered <- data$key[order(data$image, -data$rank)]
  data$key <- factor(data$key, levels = unique(ordered))
  chart <- ggplot(data, aes(x = probability, y = key)) +
    geom_col(fill = "#1f77b4", width = 0.7) +
    geom_text(aes(label = percent(probability)), hjust = -0.1, size = 3.2) +
    scale_y_discrete(labels = function(keys) unname(axis_labels[keys])) +
    scale_x_continuous(labels = function(x) sprintf("%g%%", 100 * x), limits = c(0, 1.15),
                       breaks = seq(0, 1, 0.25), expand = c(0, 0)) +
    labs(x = "probability", y = NULL, title = NULL, caption = model) +
    theme_minimal(base_size = 12) +
    theme(panel.grid.major.y = element_blank())
  if (length(unique(data$image)) > 1) {
    names_by_image <- stats::setNames(unique(data$name), as.character(unique(data$image)))
    chart <- chart + facet_wrap(~image, scales = "free_y", labeller = as_labeller(names_by_image))
  }
  chart
}

compare_chart <- function(data, model) {
  # Images across, the classes any of them ranks highest down (at most MAX_CLASSES, by their best
  # probability), probability as colour and number: one glance compares what each image was taken for.
  best <- tapply(data$probability, data$label, max)
  classes <- head(names(sort(best, decreasing = TRUE)), MAX_CLASSES)
  data <- data[data$label %in% classes & !duplicated(data[, c("image", "label")]), ]
  data$class <- factor(data$label, levels = rev(classes))
  names_by_image <- unique(data[, c("image", "name")])
  data$column <- factor(data$image, levels = sort(unique(data$image)))
  column_labels <- stats::setNames(names_by_image$name, as.character(names_by_image$image))
  ggplot(data, aes(x = column, y = class, fill = probability)) +
    geom_tile(colour = "white") +
    geom_text(aes(label = percent(probability)), size = 3.2) +
    scale_fill_gradient(low = "#deebf7", high = "#3182bd", limits = c(0, 1), labels = function(x) sprintf("%g%%", 100 * x)) +
    scale_x_discrete(labels = function(keys) unname(column_labels[keys])) +
    scale_y_discrete(labels = function(keys) keys) +
    labs(x = NULL, y = NULL, fill = "probability", caption = model) +
    theme_minimal(base_size = 12) +
    theme(axis.text.x = element_text(angle = 30, hjust = 1), panel.grid = element_blank())
}

render_png <- function(chart, width, height) {
  file <- tempfile(fileext = ".png")
  on.exit(unlink(file), add = TRUE)
  ragg::agg_png(file, width = width, height = height, units = "px", res = DPI)
  tryCatch({
    print(chart)
  }, finally = {
    grDevices::dev.off()
  })
  readBin(file, "raw", n = file.info(file)$size)
}

# Draw one chart while starting, before the port opens: the first request then does not pay for loading
# the device, the fonts and ggplot2's lazy parts (about 0.5 s of a first chart here).
invisible(render_png(bars_chart(data.frame(image = 1L, name = "1. warm-up", rank = 1L, label = "warm-up",
                                           probability = 0.5, stringsAsFactors = FALSE), ""), 200L, 200L))

#* @filter content_type
function(req) {
  if (length(req$HTTP_CONTENT_TYPE) == 0 || !nzchar(req$HTTP_CONTENT_TYPE)) {
    req$HTTP_CONTENT_TYPE <- "application/octet-stream"
  }
  plumber::forward()
}

#* The service is up (liveness): plumber answers, R draws.
#* @get /health
#* @serializer unboxedJSON
function() {
  list(status = "ok")
}

#* A PNG chart of a /predict answer: bars of each image's top classes, or one chart comparing the images.
#* @post /plot
#* @param chart auto (default: bars for one image, compare for several), bars or compare
#* @param width pixels, 200..2000 (default 800)
#* @param height pixels, 200..2000 (default 400)
#* @parser unparsed
function(req, res, chart = "auto", width = "", height = "") {
  started <- Sys.time()
  tryCatch({
    kind <- as.character(chart)[1]
    if (is.na(kind) || !(kind %in% CHARTS)) {
      refuse(400L, "bad_chart", "chart must be one of: auto, bars, compare.")
    }
    width <- whole_number(width, "width", DEFAULT_SIZE[1], SIZE_RANGE)
    height <- whole_number(height, "height", DEFAULT_SIZE[2], SIZE_RANGE)
    raw_body <- req$bodyRaw
    if (is.null(raw_body) || length(raw_body) == 0) {
      refuse(400L, "empty_body", "Send the backend's /predict answer as the JSON body (Content-Type: application/json).")
    }
    body <- tryCatch(
      jsonlite::fromJSON(rawToChar(raw_body), simplifyVector = FALSE),
      error = function(e) refuse(400L, "bad_json", "The body is not valid JSON. Send the backend's /predict answer as it came.")
    )
    data <- read_predictions(body)
    model <- as_label(body$model, "")
    if (kind == "auto") {
      kind <- if (length(unique(data$image)) > 1) "compare" else "bars"
    }
    chart_object <- if (kind == "bars") bars_chart(data, model) else compare_chart(data, model)
    png <- render_png(chart_object, width, height)
    log_line("INFO", "drew a chart", chart = kind, images = length(unique(data$image)), width = width,
             height = height, bytes = length(png), ms = round(as.numeric(Sys.time() - started, units = "secs") * 1000, 1))
    res$status <- 200L
    res$setHeader("Content-Type", "image/png")
    res$setHeader("Cache-Control", "no-store")
    res$body <- png
    res
  }, plot_refusal = function(e) {
    log_line("WARNING", "refused a chart request", status = e$status, code = e$code, detail = conditionMessage(e))
    json_error(res, e$status, e$code, conditionMessage(e))
  })
}

#* @plumber
function(pr) {
  pr |>
    plumber::pr_set_docs(FALSE) |>
    plumber::pr_set_404(function(req, res) {
      json_error(res, 404L, "not_found", "Not found. This service answers POST /plot and GET /health.")
    }) |>
    plumber::pr_set_error(function(req, res, err) {
      log_line("ERROR", "a chart request failed", path = req$PATH_INFO, error = substr(conditionMessage(err), 1, 500))
      json_error(res, 500L, "server_error", "The chart could not be drawn. Retry; if it persists, check the plotter's logs.")
    }) |>
    plumber::pr_hook("exit", function() log_line("INFO", "the plotter stopped"))
}
