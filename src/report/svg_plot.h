// Small SVG charts for training curves and comparisons: line and scatter series on linear or log
// axes, with "nice" ticks, axis labels with units, a title and a legend. Plain text output, no
// dependencies; any browser or image viewer renders it.
#pragma once

#include <string>
#include <vector>

namespace mf {

struct Series {
  std::string label;
  std::vector<double> x, y;
  bool line = true;
  bool markers = false;
  std::vector<std::string> point_labels;  // drawn next to each point when not empty
  // Style: palette entry (default: the series' position). Past the 8 colours of the palette, styles
  // repeat dashed; an empty label keeps a series out of the legend (e.g. a second seed).
  int style = -1;
};

struct Plot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_x = false;
  int width = 640, height = 420;
};

std::string render_svg(const Plot& plot);
// Several plots side by side in one image (`columns` per row).
std::string render_svg(const std::vector<Plot>& plots, int columns);
void write_svg(const std::string& path, const std::string& svg);  // atomic

}  // namespace mf
