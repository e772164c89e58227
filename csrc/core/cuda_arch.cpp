#include <sstream>

#include "cuda.h"

namespace fastnn {

bool cuda_arch_runs(const std::string& archs, int major, int minor) {
    std::stringstream list(archs);
    std::string arch;
    while (std::getline(list, arch, ',')) {
        // "90" is "90-real;90-virtual"; "-real" is machine code only, "-virtual" PTX only
        const size_t dash = arch.find('-');
        const std::string kind = dash == std::string::npos ? "" : arch.substr(dash + 1);
        const std::string digits = arch.substr(0, dash);
        if (digits.size() < 2 || digits.size() > 4 || digits.find_first_not_of("0123456789") != std::string::npos)
            continue;  // not an architecture CMake names ("native", "all", "90a")
        const int a_major = std::stoi(digits.substr(0, digits.size() - 1));
        const int a_minor = digits.back() - '0';
        const bool newer_or_same = major > a_major || (major == a_major && minor >= a_minor);
        if (kind != "virtual" && major == a_major && minor >= a_minor) return true;
        if (kind != "real" && newer_or_same) return true;
    }
    return false;
}

}  // namespace fastnn
