#ifndef SWIFTQUANT_H
#define SWIFTQUANT_H
#endif
