#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>
#include <algorithm>
int main(int argc, char **argv) {
    std::map<std::string, int> counts;
    for (int i = 1; i < argc; i++) counts[argv[i]]++;
    for (auto &kv : counts) std::cout << kv.first << "=" << kv.second << "\n";
    try { throw std::runtime_error("thrown and caught"); }
    catch (const std::exception &e) { std::cout << e.what() << "\n"; }
    std::vector<int> v{5, 3, 9, 1};
    std::sort(v.begin(), v.end());
    for (int x : v) std::cout << x << " ";
    std::cout << std::endl;
    return 0;
}
