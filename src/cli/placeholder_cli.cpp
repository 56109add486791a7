// placeholder, replaced as the module is written
int main() { return 0; }
